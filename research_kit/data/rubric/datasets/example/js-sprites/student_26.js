var star = createSprite(200, 200);
star.setAnimation("star");

function draw() {
  background("black");
  if (keyDown("space")) {
    background("white");
  }
  drawSprites();
}
