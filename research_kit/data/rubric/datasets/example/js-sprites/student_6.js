var bird = createSprite(50, 200);
bird.setAnimation("bird");
bird.scale = 0.5;
var cloud = createSprite(400, 80);
cloud.setAnimation("cloud");
cloud.velocityX = -2;

function draw() {
  background("skyblue");
  bird.velocityY = bird.velocityY + 0.3;
  if (keyDown("space")) {
    bird.velocityY = -5;
  }
  if (cloud.x < -50) {
    cloud.x = 450;
  }
  drawSprites();
}
